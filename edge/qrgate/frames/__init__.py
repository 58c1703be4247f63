"""Frame sources: where grey images come from (Pi camera, USB camera, files, synthetic gate scene)."""
