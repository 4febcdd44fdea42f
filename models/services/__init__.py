"""BentoML services of the reference models (one module each); see :mod:`models.bento` for packaging."""
