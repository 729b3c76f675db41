"""Image-text matching: does this caption describe this image? The worked example of docs/NEW_TASK.md."""
