"""Image preprocessing internals; the public entry is `clipcore.preprocess`.

- `geometry`: where the reference pipelines resize, pad and crop (pure size arithmetic).
- `resample`: Pillow's 8-bit convolution resize, re-done exactly, for just the pixels that are kept.
- `loading`: opening image files with clear errors, optional JPEG draft decoding and EXIF rotation.
"""
