class GateReport: pass
def apply_gates(*a, **k): raise NotImplementedError
