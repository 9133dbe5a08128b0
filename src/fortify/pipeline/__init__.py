"""fortify.pipeline"""
