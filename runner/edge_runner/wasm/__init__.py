"""wasmtime, narrowed to what the runner uses: the engine and compilation, fast
calls, the guest's output, traps and the compiled-module disk cache.

Three lifetimes in three types (as in Spin): the engine lives for the process
(:mod:`.engine`), a compiled module from load until replaced, a store for one
instance.  Every use of wasmtime-py's private layer is in :mod:`.capi`.
"""
