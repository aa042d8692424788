"""loadtests.server"""
