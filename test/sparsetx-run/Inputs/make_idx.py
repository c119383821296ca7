# Writes a tiny Fashion-MNIST-like IDX set (4x4 images) into the directory
# given: train (5040 images, of which the loader keeps the last 5000 for
# validation) and t10k (20 images).
import os, struct, sys

out = sys.argv[1]
os.makedirs(out, exist_ok=True)

def images(count, seed):
    data = bytearray()
    for k in range(count):
        for p in range(16):
            data.append((k * 37 + p * 11 + seed) % 256 if p % 3 else 0)
    return data

def write(name, magic, dims, payload):
    with open(os.path.join(out, name), "wb") as f:
        f.write(struct.pack(">I", magic))
        for d in dims:
            f.write(struct.pack(">I", d))
        f.write(payload)

write("train-images-idx3-ubyte", 0x803, [5040, 4, 4], images(5040, 1))
write("train-labels-idx1-ubyte", 0x801, [5040], bytes(k % 10 for k in range(5040)))
write("t10k-images-idx3-ubyte", 0x803, [20, 4, 4], images(20, 5))
write("t10k-labels-idx1-ubyte", 0x801, [20], bytes(k % 10 for k in range(20)))
