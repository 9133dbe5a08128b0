"""fortify.training"""
