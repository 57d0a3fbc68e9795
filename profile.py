"""profile.py: each method's real training step against the floor (docs/BENCHMARKS.md).

    python profile.py                            # the embedded model, every method
    python profile.py model=gemma3_270m methods=[floor,lape,lora]
    python profile.py model=llama_d512           # the profile shapes, random weights

The same code as `langsub profile ...` (src/langsub/bench/step.py).
"""
if __name__ != "__main__":
    # Imported as the standard library's `profile` (cProfile does, and Lightning imports
    # cProfile): hand over the real module so nothing breaks when the repo root is on sys.path.
    import importlib.util as _u
    import os as _os
    import sys as _sys
    import sysconfig as _sc

    _spec = _u.spec_from_file_location("profile", _os.path.join(_sc.get_paths()["stdlib"],
                                                                 "profile.py"))
    _mod = _u.module_from_spec(_spec)
    _sys.modules["profile"] = _mod
    _spec.loader.exec_module(_mod)
    globals().update({k: v for k, v in vars(_mod).items() if not k.startswith("__")})
else:
    import os
    import sys
    from pathlib import Path

    ROOT = Path(__file__).resolve().parent
    os.environ.setdefault("LANGSUB_ROOT", str(ROOT))
    sys.path.insert(0, str(ROOT / "src"))
    from langsub.cli import main

    main(["profile", *sys.argv[1:]])
