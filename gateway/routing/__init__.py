"""Traffic between model versions: deployments, policies, bandit statistics, feedback, guards."""
