"""loadtests.common"""
