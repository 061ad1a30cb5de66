"""Where the runner's configuration comes from: a folder of manifests
(standalone, :mod:`.manifests`) or the operator's ConfigMaps (cluster,
:mod:`.cluster`, with the runner's Lease in :mod:`.registration`).  Both
describe a :class:`~edge_runner.invoke.catalog.DesiredState` for the catalog.
"""
