"""edge-operator control plane: reconciles EdgeFunction/EdgeRoute into runner ConfigMaps."""
