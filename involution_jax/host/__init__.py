"""What the library needs of the machine it runs on: the cache folder (`cache`), one
run per workdir (`workdir_lock`), console output (`console`), checked output paths
(`paths`) and SIGTERM (`signals`). Imports nothing else of the package."""
