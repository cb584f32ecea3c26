"""The sharded ADIOS2 (BP5) store: preprocess once, stream in training and evaluation.

- ``writer.preprocess``: datasets of a data config → shards + manifest (resumable, workers);
- ``manifest.Store``: an opened store (manifest, memory-mapped entry arrays, hash checks);
- ``source.StoreGraphSource`` / ``source.prepare_store_data``: graph sources over the shards;
- ``loader.BatchLoader``: DataLoader workers and prefetch feeding the Trainer;
- ``splits``: content hashes and the train/validation split they decide (files use it too).

Nothing here is imported by ``atomgfm.data.store`` itself, so ``data.sources`` can import
``splits`` without the ADIOS2 package.
"""
