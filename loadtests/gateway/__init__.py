"""loadtests.gateway"""
