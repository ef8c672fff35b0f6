"""vlm in Ray Data: callable classes for `Dataset.map_batches(..., batch_format="numpy")`, each
actor owning one `vlm.Worker` (one `vlm worker` child, models loaded once).

    import ray, vlm.ray
    ds = ray.data.read_text("captions.txt")                    # a column "text"
    ds = ds.map_batches(vlm.ray.TextEmbedder, fn_constructor_kwargs={"model": "models/all-MiniLM-L6-v2"},
                        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=2), num_cpus=1)
    ds.write_parquet("out/")                                    # + "embedding", "error", "error_kind"

Every other column is kept. "embedding" is float32 of fixed width (NaN for a failed item),
"error" the message (None when it worked), "error_kind" the kind as errors.jsonl names it.
Size the actor pool (`ActorPoolStrategy(size=n)`) and give each actor `num_cpus` from
`ray.cluster_resources()`; leave CPUs for Ray's read tasks — an actor pool holding every CPU, or
asking for more CPUs than the cluster has, stalls the dataset (on 8 cores, e.g., 3 actors of
2 CPUs). Each worker's threads follow `num_cpus` (Ray sets OMP_NUM_THREADS per actor) unless
`threads=` says otherwise.
"""
import numpy as np

from . import Worker

__all__ = ["ImageEmbedder", "TextEmbedder"]


def _columns(batch, vectors, errors):
    """The batch with "embedding" (a fixed-size list of float32), "error" and "error_kind"
    (strings, null when the item worked) added, as a pyarrow Table: explicit types, so every
    block of the dataset has the same schema even when all of a block's items worked."""
    import pyarrow as pa
    from ray.data.extensions import ArrowTensorArray

    error = [None] * len(vectors)
    kind = [None] * len(vectors)
    for i, k, m in errors:
        error[i] = m
        kind[i] = k
    columns, names = [], []
    for name, values in batch.items():
        values = np.asarray(values)
        columns.append(ArrowTensorArray.from_numpy(values) if values.ndim > 1 else pa.array(list(values) if values.dtype == object else values))
        names.append(name)
    dim = vectors.shape[1]
    columns.append(pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), type=pa.float32()), dim))
    columns.append(pa.array(error, type=pa.string()))
    columns.append(pa.array(kind, type=pa.string()))
    return pa.Table.from_arrays(columns, names=names + ["embedding", "error", "error_kind"])


class _Embedder:
    def __init__(self, **worker):
        self.worker = Worker(**worker)

    def __del__(self):
        w = getattr(self, "worker", None)
        if w is not None:
            w.close()


class TextEmbedder(_Embedder):
    """Adds the text vectors of `text_column`. model: a text model folder (vlm's --text-model);
    other keyword options are the worker's (max_length=128, pooling="cls", normalize=False, …)."""

    def __init__(self, model=None, text_column="text", **options):
        super().__init__(text_model=model, **options)
        self.text_column = text_column

    def __call__(self, batch):
        texts = batch[self.text_column]
        vectors, errors = self.worker.embed_texts([str(t) for t in texts])
        return _columns(batch, vectors, errors)


class ImageEmbedder(_Embedder):
    """Adds the image vectors of `path_column` (file paths), or of `bytes_column` (encoded
    JPEG/PNG, e.g. from ray.data.read_binary_files). model: a ResNet checkpoint (vlm's
    --image-model); other keyword options are the worker's (layer="logits", resize=232, …)."""

    def __init__(self, model=None, path_column="path", bytes_column=None, **options):
        super().__init__(image_model=model, **options)
        self.path_column, self.bytes_column = path_column, bytes_column

    def __call__(self, batch):
        if self.bytes_column is not None:
            vectors, errors = self.worker.embed_image_bytes(list(batch[self.bytes_column]))
        else:
            vectors, errors = self.worker.embed_images([str(p) for p in batch[self.path_column]])
        return _columns(batch, vectors, errors)
