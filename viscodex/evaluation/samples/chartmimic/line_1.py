import matplotlib.pyplot as plt
import numpy as np

lam = np.linspace(0, 1, 11)
fig, ax = plt.subplots(figsize=(4, 3))
ax.plot(lam, 10 - 40 * (lam - 0.7) ** 2, color="purple", marker="o", label="pass@1")
ax.plot(lam, 6 + 3 * lam, color="gray", linestyle="--", label="grounding")
ax.set_xlabel("lambda")
ax.legend()
ax.grid(alpha=0.3)
plt.tight_layout()
plt.savefig("line_1.pdf", bbox_inches="tight")
