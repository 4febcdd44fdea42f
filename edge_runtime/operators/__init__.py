"""Pre-implemented operators. Importing this package registers them all."""

from .base import REGISTRY, Operator, SpecError, StepContext, load_entry_points, lookup, register
from .media import (
                         Decode,
                         Encode,
                         FileInput,
                         FileOutput,
                         FrameRate,
                         FrameStack,
                         RegionOfInterest,
                         Resolution,
                         StreamInput,
                         UsbCameraInput,
)
from .structured import (
                         Alert,
                         ApplyModel,
                         ChangeTrigger,
                         CustomFunction,
                         DeviceInput,
                         DeviceOutput,
                         Filter,
                         Notification,
                         Sample,
                         TimeSeriesInput,
)
from .window import Aggregate, TimeWindow, Windows

__all__ = ["REGISTRY", "Operator", "SpecError", "StepContext", "load_entry_points", "lookup", "register",
           "Alert", "ApplyModel", "ChangeTrigger", "CustomFunction", "DeviceInput", "DeviceOutput",
           "Filter", "Notification", "Sample", "TimeSeriesInput", "Aggregate", "TimeWindow", "Windows",
           "Decode", "Encode", "FileInput", "FileOutput", "FrameRate", "FrameStack", "RegionOfInterest", "Resolution",
           "StreamInput", "UsbCameraInput"]
