"""fortify.report"""
