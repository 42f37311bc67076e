from stabilityscope.training.schedule import checkpoint_epochs


def test_every_epoch_includes_init_and_end():
    assert checkpoint_epochs(5) == [0, 1, 2, 3, 4, 5]


def test_every_k_keeps_last_epoch():
    assert checkpoint_epochs(10, "every", every=4) == [0, 4, 8, 10]


def test_log_spacing_is_dense_early():
    epochs = checkpoint_epochs(500, "log", num=20)
    assert epochs[0] == 0 and epochs[-1] == 500 and epochs[1] == 1
    gaps = [b - a for a, b in zip(epochs[1:], epochs[2:])]
    assert gaps == sorted(gaps) and len(epochs) <= 21


def test_explicit_list_is_clipped_and_sorted():
    assert checkpoint_epochs(10, "list", explicit=[7, 3, 30]) == [0, 3, 7, 10]
