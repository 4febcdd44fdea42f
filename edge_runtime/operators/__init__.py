"""Pre-implemented operators, one module per family. Importing this package registers them all.

- :mod:`.inputs`: device_input, event_input, time_series_input
- :mod:`.video_inputs`: file_input, stream_input, usb_camera_input (and the frame batches the node makes)
- :mod:`.transforms`: filter, sample, change_trigger, custom_function
- :mod:`.windows`: time_window, aggregate (their reductions in :mod:`.reductions`)
- :mod:`.messaging`: notification, alert, upload, device_output (and ``{field}`` templates)
- :mod:`.models`: apply_model
- :mod:`.media`: decode, encode, resolution, frame_rate, frame_stack, file_output (the H.264 writer in
  :mod:`.h264`); :mod:`.regions`: region_of_interest

The contract and the registry are in :mod:`.base`; parameter checks several families share in :mod:`.params`;
frames, images and JPEG in :mod:`.images`; JSON-safe operator state in :mod:`.state`.
:func:`edge_runtime.testing.check_operator` checks that an operator keeps the contract's promises.
"""

from .base import REGISTRY, Operator, SpecError, StepContext, load_entry_points, lookup, register
from .inputs import DeviceInput, EventInput, TimeSeriesInput
from .media import Decode, Encode, FileOutput, FrameRate, FrameStack, Resolution
from .messaging import Alert, DeviceOutput, Notification, Upload
from .models import ApplyModel
from .regions import RegionOfInterest
from .transforms import ChangeTrigger, CustomFunction, Filter, Sample
from .video_inputs import FileInput, StreamInput, UsbCameraInput, VideoInput
from .windows import Aggregate, TimeWindow, Windows

__all__ = ["REGISTRY", "Operator", "SpecError", "StepContext", "load_entry_points", "lookup", "register",
           "Alert", "ApplyModel", "ChangeTrigger", "CustomFunction", "DeviceInput", "DeviceOutput", "EventInput",
           "Filter", "Notification", "Sample", "TimeSeriesInput", "Upload", "Aggregate", "TimeWindow", "Windows",
           "Decode", "Encode", "FileInput", "FileOutput", "FrameRate", "FrameStack", "RegionOfInterest", "Resolution",
           "StreamInput", "UsbCameraInput", "VideoInput"]
