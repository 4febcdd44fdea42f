"""The BentoML service of the models (one for all: generic.py); see :mod:`models.bento` for packaging."""
