"""Help texts that teach: what each control changes and what to expect.
Started from the reference course's own explanations."""

HELP = {
    "data_source": "Built-in phantom: synthetic chest films made on this server, no upload needed. "
                   "Folder: a path on the server in the course layout (train/ validation/ test/, files ending "
                   "_b/_c/_l/_h) or with one folder per class. Upload: a .zip of either layout.",
    "arch": "FC flattens the 32×32 patch into 1,024 numbers and connects every pixel to every unit: "
            "it cannot know that neighbouring pixels belong together. A CNN slides small 3×3 filters over the "
            "image, sharing the same weights everywhere, so a conv layer needs far fewer parameters than a "
            "dense layer of the same width.",
    "activation": "ReLU passes positives and zeroes negatives; a unit whose input stays negative outputs 0 "
                  "and gets no gradient, so it may never recover ('dying ReLU': watch the dead-unit monitor). "
                  "LeakyReLU keeps a small slope α for negatives so such units still learn. tanh and sigmoid "
                  "saturate: for large inputs their gradient vanishes. ELU is smooth and negative below zero.",
    "alpha": "LeakyReLU's slope for negative inputs. 0 is plain ReLU; the course uses 0.01. Larger slopes "
             "keep more gradient flowing but make the unit more linear.",
    "epochs": "One epoch = one pass over all training patches. More epochs raise training accuracy; when "
              "validation accuracy stops rising while training accuracy keeps climbing, the model overfits.",
    "batch_size": "Patches per weight update (mini-batch gradient descent). Small batches: more, noisier "
                  "updates per epoch (see the batch-loss jitter, course Task 4). Batch size 1 is plain SGD; "
                  "the whole set is batch gradient descent.",
    "lr": "Step size of each update. The course uses 1e-5 with Adam: slow but steady. Too large and the loss "
          "jumps or diverges; too small and nothing moves in the time you have (the course CNN's problem).",
    "optimizer": "Adam adapts a step size per weight (the course's choice). SGD with momentum is the classic: "
                 "one global step size, with momentum smoothing the direction over batches.",
    "batch_norm": "Batch normalisation rescales each layer's outputs to zero mean and unit variance over the "
                  "mini-batch, then learns a scale and shift. It makes training faster and less sensitive to "
                  "the learning rate (course Task 5). The CNN always has its batch-norm layers.",
    "dropout": "During training, randomly silences this share of units so the network cannot rely on any "
               "single one: a regulariser against overfitting. Off at test time.",
    "filters": "Number of 3×3 filters in each of the five conv layers (course: 64,128,128,256,256). Each "
               "filter is a feature detector; halving them roughly halves the conv parameters.",
    "cnn_mode": "seed: the course's CNN exactly, including BatchNormalization(axis=1), which on NHWC tensors "
                "normalises image rows instead of channels, and lr 1e-5 under L2 1e-2: it barely learns. "
                "corrected: batch norm over channels before the activation, lr 1e-3, light L2.",
    "l2": "Weight decay: adds λ·Σw² to the loss so weights stay small. Too strong and it overwhelms the data "
          "term (the course CNN's 1e-2 on every conv).",
    "seed": "Random seed for weight initialisation, dropout and shuffling: the same seed and settings give "
            "the same run. Change it to see how much results vary by chance alone.",
    "limit_train": "Train on only this many patches (0 = all). A quick way to try the CNN in class: "
                   "2,000 patches take a fifth of the time.",
    "preset": "The reference course's seven experiments: picks every control for you and shows the "
              "course's reported figures next to yours.",
}

BN_AXIS_EXPLAINER = """
**What `BatchNormalization(axis=1)` does here.** Keras images are NHWC: (batch, height, width, channels).
`axis=1` is the *height* axis, so the layer learns one scale and one shift **per image row**
and averages over batch, width and channels — mixing every feature map together.
The intended normalisation is per **channel** (`axis=-1`): one scale/shift per filter.
You can read it in the parameter counts: 4 params per row ⇒ 128/64/64/32/32
(rows 32, 16, 16, 8, 8) instead of 4 per channel ⇒ 256/512/512/1024/1024.
Add lr 1e-5 under L2 1e-2 and the weights barely move: test accuracy stays near chance (25 %).
"""
