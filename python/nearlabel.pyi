"""nearlabel: classify images by vector search (type stub of the C++ extension module).

Images are paths (str or os.PathLike), bytes of an image file, or numpy uint8 arrays
HxWx3 in RGB order (HxW grey too); a list of them, or an NxHxWx3 array, gives a list of
results. See docs/python.md.
"""
import os
from typing import Any, Callable, Iterable, Optional, Sequence, Union, overload

import numpy as np
import numpy.typing as npt

Image = Union[str, os.PathLike, bytes, bytearray, memoryview, npt.NDArray[np.uint8]]

class Error(Exception):
    """Every error nearlabel raises, with the CLI's message."""

class InvalidArgumentError(Error, ValueError): ...
class NotFoundError(Error, LookupError): ...
class CorruptionError(Error): ...
class IOError(Error, OSError): ...
class MismatchError(Error): ...
class UnsupportedError(Error): ...
class InternalError(Error): ...

class Neighbor:
    id: int
    distance: float  # cosine distance to the stored float32 vector
    label: str
    source: str
    metadata: dict[str, Any]

class Classification:
    image: str
    label: Optional[str]  # None for a search result; "unknown" when rejected
    confidence: float
    unknown: bool
    scores: list[tuple[str, float]]
    neighbors: list[Neighbor]
    plan: str
    voted_label: str
    rejected_why: str

SearchResult = Classification

class ImageError:
    image: str
    message: str
    kind: str  # the Error subclass it would raise

class Report:
    accuracy: float
    n: int
    correct: int
    protocol: str
    classes: list[str]
    confusion: npt.NDArray[np.int64]  # [truth, predicted] in `classes` order
    per_class: list[dict[str, Any]]  # label, support, precision, recall, f1
    mismatches: list[dict[str, Any]]
    def to_html(self, path: str) -> None: ...

class Collection:
    location: str
    def __len__(self) -> int: ...
    def info(self) -> dict[str, Any]: ...
    @overload
    def classify(self, images: Image, *, k: int = 5, vote: str = "majority",
                 within: Optional[str] = None, where: Optional[str] = None,
                 reject: bool = False, reject_quantile: float = 0.97,
                 label: Optional[str] = None, exact: bool = False, ef: int = 0,
                 on_error: str = "raise", confidence: str = "calibrated") -> Classification: ...
    @overload
    def classify(self, images: Iterable[Image], *, k: int = 5, vote: str = "majority",
                 within: Optional[str] = None, where: Optional[str] = None,
                 reject: bool = False, reject_quantile: float = 0.97,
                 label: Optional[str] = None, exact: bool = False, ef: int = 0,
                 on_error: str = "raise",
                 confidence: str = "calibrated") -> list[Union[Classification, ImageError]]: ...
    @overload
    def search(self, images: Image, *, k: int = 10, within: Optional[str] = None,
               where: Optional[str] = None, label: Optional[str] = None,
               exact: bool = False, ef: int = 0, on_error: str = "raise") -> SearchResult: ...
    @overload
    def search(self, images: Iterable[Image], *, k: int = 10, within: Optional[str] = None,
               where: Optional[str] = None, label: Optional[str] = None,
               exact: bool = False, ef: int = 0,
               on_error: str = "raise") -> list[Union[SearchResult, ImageError]]: ...
    def evaluate(self, *, label: Optional[str] = None, within: Optional[str] = None,
                 group_by: Optional[str] = None, k: int = 1, vote: str = "majority",
                 where: Optional[str] = None,
                 queries: Optional[Union[str, os.PathLike]] = None,
                 query_label: Optional[str] = None, layout: str = "auto") -> Report: ...
    def vectors(self) -> npt.NDArray[np.float32]: ...  # (rows, dims), read-only, no copy
    def ids(self) -> npt.NDArray[np.int64]: ...
    def metadata(self) -> list[dict[str, Any]]: ...
    def refresh(self) -> int: ...
    def ingest(self, dataset: Union[str, os.PathLike], *, model: Optional[str] = None,
               layout: str = "auto", batch: int = 32, index: bool = False,
               models: Optional[Sequence[str]] = None,
               progress: Optional[Callable[[int, int], None]] = None) -> dict[str, Any]: ...
    def __enter__(self) -> "Collection": ...
    def __exit__(self, *args: Any) -> bool: ...

def open(location: Union[str, os.PathLike], *, models: Optional[Sequence[str]] = None,
         exact: bool = False) -> Collection: ...
def ingest(store: str, dataset: Union[str, os.PathLike], *, model: Optional[str] = None,
           layout: str = "auto", batch: int = 32, index: bool = False,
           models: Optional[Sequence[str]] = None,
           progress: Optional[Callable[[int, int], None]] = None) -> dict[str, Any]: ...
@overload
def embed(images: Image, *, model: str = "mobilenetv2-12-int8",
          models: Optional[Sequence[str]] = None) -> npt.NDArray[np.float32]: ...
@overload
def embed(images: Iterable[Image], *, model: str = "mobilenetv2-12-int8",
          models: Optional[Sequence[str]] = None) -> npt.NDArray[np.float32]: ...
def models(*, models: Optional[Sequence[str]] = None) -> list[dict[str, Any]]: ...
