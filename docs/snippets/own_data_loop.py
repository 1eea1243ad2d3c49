"""Train a dynconv model on your own images in a plain PyTorch loop (docs/own_data.rst; tests/test_own_data.py runs
this file on a tiny ImageFolder it writes). Usage: python docs/snippets/own_data_loop.py IMAGE_FOLDER [EPOCHS]"""
import sys

import timm
import torch
from torchvision import datasets, transforms

import dynconv  # noqa: F401  (registers the dynconv models with timm)

root, epochs = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 10
model = timm.create_model("dynconv_cifar_tiny_routed", num_classes=len(datasets.ImageFolder(root).classes))
config = timm.data.resolve_data_config({}, model=model)  # 32x32 input, CIFAR-10's mean and std
transform = transforms.Compose([transforms.Resize(config["input_size"][1:]), transforms.ToTensor(),
                                transforms.Normalize(config["mean"], config["std"])])
loader = torch.utils.data.DataLoader(datasets.ImageFolder(root, transform), batch_size=64, shuffle=True)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
for epoch in range(epochs):
    model.train()
    for images, labels in loader:
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"epoch {epoch + 1}: loss {loss.item():.3f}")
torch.save(model.state_dict(), "model.pt")
