"""Write the golden point lists from the PyTorch reference (not from our code)."""
import numpy as np
from numba_demucs.debug import reference as ref
for arch in ("htdemucs", "htdemucs_6s", "hdemucs_mmi"):
    model = ref.build_model(arch, seed=0, channels=8, dconv_comp=4)
    names = []
    length = int(min(model.segment, 1) * model.samplerate) if arch.startswith("hdemucs") \
        else int(model.segment * model.samplerate)
    ref.run_reference(model, ref.music_like_signal(length / 44100 + 0.01)[:, :length],
                      lambda n, c, a: names.append(n), segment_only=True)
    with open(f"tests/parity/golden/{arch}_points.txt", "w") as f:
        f.write(f"# trace points of one {arch} forward, in order, as demucs 4.1.0's forward hooks\n")
        f.write("# report them (written by tests/parity/make_golden.py from the PyTorch side)\n")
        f.write("\n".join(names) + "\n")
    print(arch, len(names))
