"""SYNTHETIC data generators for EdgeLoop's reference models: nothing here is real, measured data.

Every value is simulated from a seed, with exact ground truth, because no real pump telemetry or street
footage can be downloaded here.  Use it to build, test and demonstrate the reference models and the agile
loop; do not report model accuracy on it as if it were field performance.

* :mod:`models.synth.telemetry` -- pump telemetry (temperature, vibration, current) with labelled faults
  (bearing wear, overheating, cavitation, sensor faults) and an ``"ageing"`` drift variant; EdgeLoop records
  and per-device window features.
* :mod:`models.synth.scenes` -- street-camera frames with a drain, passers-by and bucket-dumping events
  (day, night, rain, other bucket) with per-frame truth, drain-ROI crops and an mp4 writer.
"""

from models.synth.scenes import (
    VARIANTS,
    FrameTruth,
    PersonPose,
    SceneParams,
    crops,
    generate_clip,
    iter_clip,
    render_scene,
    write_video,
)
from models.synth.telemetry import FAULTS, FaultEvent, Telemetry, generate_telemetry, windows

__all__ = [
    "FAULTS",
    "VARIANTS",
    "FaultEvent",
    "FrameTruth",
    "PersonPose",
    "SceneParams",
    "Telemetry",
    "crops",
    "generate_clip",
    "generate_telemetry",
    "iter_clip",
    "render_scene",
    "windows",
    "write_video",
]
