"""loadtests.locust"""
