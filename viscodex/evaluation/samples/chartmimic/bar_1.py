import matplotlib.pyplot as plt

labels = ["merge", "swap", "base"]
values = [74.8, 61.2, 73.4]
fig, ax = plt.subplots(figsize=(4, 3))
ax.bar(labels, values, color=["#1f77b4", "#ff7f0e", "#2ca02c"])
ax.set_ylim(50, 80)
ax.set_ylabel("score")
ax.set_title("ChartMimic")
plt.tight_layout()
plt.savefig("bar_1.pdf", bbox_inches="tight")
