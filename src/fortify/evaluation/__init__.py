"""fortify.evaluation"""
