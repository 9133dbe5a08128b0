"""fortify.attacks"""
