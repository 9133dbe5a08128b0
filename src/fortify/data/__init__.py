"""fortify.data"""
