"""Devices: the data-parallel mesh and global batches.

Every device of every process sits on one mesh axis, "data": batches are split
over it, the train state is replicated.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


def data_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """`devices` (default: all devices of all processes) on one axis, "data"."""
  count = jax.device_count() if devices is None else len(devices)
  return jax.make_mesh(
    (count,), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
  )


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Every device holds the whole array (the train state, evaluation outputs)."""
  return NamedSharding(mesh, P())


def batch_sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
  """The leading (batch) axis split over the mesh's "data" axis."""
  return NamedSharding(mesh, P("data"))


def global_batch(local: dict, sharding: NamedSharding) -> dict:
  """This process's slice of a batch {name: (b, ...)} -> global arrays on the mesh."""
  return {
    k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()
  }
