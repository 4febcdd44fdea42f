"""SYNTHETIC scenarios of the agile loop: pumps that age (pumps) and street cameras at night and in the rain
(sewage)."""
