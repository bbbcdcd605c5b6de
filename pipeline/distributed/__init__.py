"""The thin Ray layer: the only package that imports ray."""
