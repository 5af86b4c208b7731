from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class TimeNanosScan(_message.Message):
    __slots__ = ("time_nanos",)
    TIME_NANOS_FIELD_NUMBER: _ClassVar[int]
    time_nanos: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, time_nanos: _Optional[_Iterable[int]] = ...) -> None: ...
