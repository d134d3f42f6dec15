"""Data: sources and staging (local folders, S3), images, conversion to MindRecord, the training and
evaluation datasets with their transforms, and the demo's digits image set."""
