"""Sewage-dumping detection on street cameras: the Sophon Edge paper's showcase, on SYNTHETIC video.

* ``products.yaml``: the ``street_camera`` product (a ``frame`` video property);
* ``generate.py``: ``python -m apps.sewage_dumping.generate --out DIR`` renders camera videos with ground
  truth (models.synth.scenes) and writes their device bindings and the pipeline with each camera's drain;
* ``pipeline.yaml`` / :func:`apps.sewage_dumping.builder.pipeline`: the paper's figure 7 (Code 1 in the
  fluent builder): frame rate -> drain region -> intrusion model -> person there? -> last 4 crops ->
  activity model -> dumping? -> one alert per act with a JPEG of the frame (shop fronts blurred).
"""
