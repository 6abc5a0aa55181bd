"""Which models and variants exist, for whom, and where: the zoo and your own models.

Also saved and session variants (one resolution for every front end), the
runner cache and background conversions.
"""
