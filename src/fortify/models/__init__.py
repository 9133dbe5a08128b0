"""fortify.models"""
