"""The closed loop: a model zoo, a Triton fleet per revision, a traffic driver that plays the mesh."""
