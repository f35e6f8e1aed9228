import copy
import pickle

from hhld.torch.copy_inert import NOOP, CopyInert


def test_a_copy_inert_hook_calls_through_and_its_copies_do_nothing():
    calls = []
    hook = CopyInert(lambda *a, **k: calls.append((a, k)) or "out")
    assert hook(1, x=2) == "out" and calls == [((1,), {"x": 2})]
    for twin in (copy.deepcopy(hook), copy.copy(hook), pickle.loads(pickle.dumps(hook)),
                 copy.deepcopy({"h": hook})["h"], pickle.loads(pickle.dumps(NOOP))):
        assert twin is NOOP
        assert twin(1, 2, k=3) is None
    assert len(calls) == 1
