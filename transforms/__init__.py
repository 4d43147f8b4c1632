"""Feature definitions: the spec's records, the feature kinds, the loader,
the dimension resolver, resolved sizes (feature_info) and preprocessing_fn.

Imports only the ground floor (core/); every other folder reads these.
"""
