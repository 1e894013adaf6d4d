from aggregator.cli import main

# Guarded: parser processes are spawned, and they import the main module again.
if __name__ == "__main__":
    raise SystemExit(main())
