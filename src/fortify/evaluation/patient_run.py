"""The joint attack's work units: the patients of the test set, attacked one whole scan at a time.

Patients (fortify.evaluation.patients) are sorted by id and cut into units of PATIENTS_PER_UNIT; unit k
draws its random starts from `unit_seed(seed, "joint", k)`, so its outcome does not depend on which
process runs it or when. A finished unit is saved in the evaluation's units folder (UnitStore) as
`joint-<digest>-<k>.safetensors`, the digest naming what it depends on beyond the folder's fingerprint
(the resolved joint spec, the rule, the patients), and is reused by a resumed evaluation.

Per patient: its slices' clean probabilities (scoring precision); a patient the rule gets wrong clean is
not attacked (as a misclassified image is not); the others are attacked by the joint spec (attack
precision) and their adversarial slices scored again at the scoring precision, which decides. A malignant
patient the untargeted attack did not send to normal is attacked once more, targeted at normal (the
costly mistake is counted with the attack built for it); its slices are kept when they reach normal.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from fortify.attacks import AttackSpec, joint_pgd, patient_decision
from fortify.distributed import DistInfo, gather_objects
from fortify.evaluation.batches import count_passes, predict
from fortify.evaluation.patients import Patients, check_rule, indexed_rule, patient_labels, severity_order
from fortify.evaluation.results_blocks import harmful_pair, headline_threat_model
from fortify.evaluation.settings import EvalSettings
from fortify.evaluation.unit_run import UnitPlan
from fortify.evaluation.units import UnitResult, UnitStore, assigned_units, unit_seed
from fortify.progress import tasks as progress_tasks

if TYPE_CHECKING:
    from fortify.evaluation.evaluate import LoadedEvaluation

PATIENTS_PER_UNIT = 8  # the grain of resume: 8 scans of ~10 slices cost about one unit of 64 images
BOOK_KEYS = ("verdict_mismatches", "reattacked_fp32", "recovered_by_reattack")  # as attack_runs counts
HARMFUL_KEYS = ("harmful_targeted", "harmful_found")  # targeted runs at the costly class, and successes


def joint_spec(s: EvalSettings, specs: dict[str, AttackSpec], classes: list[str]) -> AttackSpec | None:
    """The patient rule checked against the classes (before any work), and the joint attack to run: the
    settings' template at the headline threat model's eps (L-inf, as the slice-level table states it),
    with the headline PGD's steps unless it names its own, and the patient rule (class indices); None
    when off."""
    check_rule(s.patient_rule, classes)
    template = s.joint_attack
    if template is None:
        return None
    threat = headline_threat_model(specs, s.eps)
    params: dict = {"eps": float(threat["eps"]), "rule": indexed_rule(s.patient_rule, classes)}
    if "norm" not in template.params:
        params["norm"] = threat["norm"]
    params["steps"] = joint_steps(s, specs.values())
    return template.replace(**params)


def joint_steps(s: EvalSettings, specs: Iterable[AttackSpec]) -> int | None:
    """The joint attack's steps: its template's own, else the headline PGD's, else the settings'
    pgd_steps; None when the joint attack is off (the time estimate counts its cost from this)."""
    if s.joint_attack is None:
        return None
    if "steps" in s.joint_attack.params:
        return int(s.joint_attack.params["steps"])
    pgd = next((sp.params.get("steps") for sp in specs if sp.name == "pgd"), None)
    return int(pgd or s.pgd_steps)


@dataclass
class JointPlan:
    spec: AttackSpec
    patients: Patients
    labels: torch.Tensor  # each patient's label
    rule: str  # the patient rule with class indices
    severity: list[int]
    harmful: tuple[int, int] | None  # (malignant, normal): the targeted run's source class and target

    @property
    def part(self) -> str:
        """The store's name for these units: what they depend on beyond the folder's fingerprint."""
        key = json.dumps([str(self.spec), self.rule, self.patients.ids, self.patients.members, self.harmful])
        return "joint-" + hashlib.sha256(key.encode()).hexdigest()[:12]

    def units(self) -> list[slice]:
        n = len(self.patients)
        return [slice(a, min(a + PATIENTS_PER_UNIT, n)) for a in range(0, n, PATIENTS_PER_UNIT)]


def _attack(
    plan: UnitPlan, jp: JointPlan, x: torch.Tensor, label: int, rt, generator, target: int | None
) -> tuple[torch.Tensor, int]:
    """One patient's slices under the joint attack run at `rt`'s precision: (their probabilities at the
    scoring precision, the patient's decision at the attack's own)."""
    with rt.autocast():
        x_adv = joint_pgd(
            plan.model, rt.to_device(x), label, generator=generator, target=target, **jp.spec.params
        )
    bs = plan.settings.batch_size
    scored = predict(plan.model, x_adv.cpu(), plan.score_rt, bs)[1]
    own = scored if rt.precision == plan.score_rt.precision else predict(plan.model, x_adv.cpu(), rt, bs)[1]
    return scored, patient_decision(own, jp.rule, jp.severity)


def _attack_settled(
    plan: UnitPlan, jp: JointPlan, x: torch.Tensor, label: int, generator, book: dict, target: int | None
) -> tuple[torch.Tensor, int]:
    """(the slices' probabilities, the patient's decision on them, both at the scoring precision),
    settled like the per-slice attacks (attack_runs): a patient the attack succeeded on (flipped, or sent
    to `target`) at its own precision (bf16) but not as the scorer (fp32) sees it is attacked again at the
    scoring precision, so a bf16 early stop cannot leave a patient robust that an fp32 attack would flip."""

    def success(decision: int) -> bool:
        return decision != label if target is None else decision == target

    adv, own = _attack(plan, jp, x, label, plan.runtime, generator, target)
    decision = patient_decision(adv, jp.rule, jp.severity)
    if success(own) and not success(decision):
        book["verdict_mismatches"] += 1
        if plan.runtime.precision != plan.score_rt.precision:
            book["reattacked_fp32"] += 1
            again, _ = _attack(plan, jp, x, label, plan.score_rt, generator, target)
            again_decision = patient_decision(again, jp.rule, jp.severity)
            if success(again_decision):
                book["recovered_by_reattack"] += 1
                adv, decision = again, again_decision
    return adv, decision


def _attack_patient(
    plan: UnitPlan, jp: JointPlan, x: torch.Tensor, label: int, generator, book: dict
) -> tuple[torch.Tensor, int]:
    """The joint attack on one clean-correct patient: (its slices' probabilities, its decision). For a
    malignant patient it did not send to normal, the attack targeted at normal too, whose slices are kept
    when it gets there."""
    adv, decision = _attack_settled(plan, jp, x, label, generator, book, None)
    if jp.harmful is None or label != jp.harmful[0] or decision == jp.harmful[1]:
        return adv, decision
    book["harmful_targeted"] += 1
    targeted, targeted_decision = _attack_settled(plan, jp, x, label, generator, book, jp.harmful[1])
    if targeted_decision == jp.harmful[1]:
        book["harmful_found"] += 1
        return targeted, targeted_decision
    return adv, decision


def run_joint_unit(plan: UnitPlan, jp: JointPlan, index: int, sl: slice, advance) -> UnitResult:
    """Joint unit `index` (patients `sl` of the sorted ids): per slice its adversarial probabilities,
    per patient its clean and joint decisions, whether it was attacked and how many slices changed."""
    t0 = time.perf_counter()
    s = plan.settings
    generator = torch.Generator().manual_seed(unit_seed(s.seed, "joint", index))
    probs, rows, clean_dec, joint_dec, attacked, changed = [], [], [], [], [], []
    book = dict.fromkeys(BOOK_KEYS + HARMFUL_KEYS, 0)
    with count_passes(plan.model) as passes:
        for p in range(sl.start, sl.stop):
            idx = torch.tensor(jp.patients.members[p], dtype=torch.long)
            _, clean = predict(plan.model, plan.x[idx], plan.score_rt, s.batch_size)
            label = int(jp.labels[p])
            decided = patient_decision(clean, jp.rule, jp.severity)
            adv, joint_decided = (
                _attack_patient(plan, jp, plan.x[idx], label, generator, book)
                if decided == label
                else (clean, decided)
            )
            probs.append(adv)
            rows.append(idx)
            clean_dec.append(decided)
            joint_dec.append(joint_decided)
            attacked.append(decided == label)
            changed.append(int((adv.argmax(1) != clean.argmax(1)).sum()))
            advance(1)
    tensors = {
        "prob": torch.cat(probs),
        "index": torch.cat(rows),
        "clean_pred": torch.tensor(clean_dec, dtype=torch.long),
        "pred": torch.tensor(joint_dec, dtype=torch.long),
        "attacked": torch.tensor(attacked, dtype=torch.bool),
        "slices_changed": torch.tensor(changed, dtype=torch.long),
    }
    meta = {"seconds": time.perf_counter() - t0, "passes": passes.as_dict(), **book}
    return UnitResult(index, sl.start, sl.stop, tensors, meta)


def run_joint_units(
    plan: UnitPlan, jp: JointPlan, store: UnitStore | None, dist: DistInfo, progress: bool
) -> list[UnitResult] | None:
    """Every joint unit, in order, on rank 0 (None on the others): this process's share computed or
    reused from the store, the other processes' gathered (and saved by rank 0)."""
    units = jp.units()
    mine = assigned_units(len(units), dist.rank, dist.world_size)
    done: dict[int, UnitResult] = {}
    todo = []
    for i in mine:
        found = store.load_part(jp.part, i) if store is not None else None
        if found is not None:
            done[i] = found
        else:
            todo.append(i)
    with progress_tasks(progress) as start:
        advance = start(
            f"joint attack ({jp.spec.name}) on patients", sum(units[i].stop - units[i].start for i in todo)
        )
        for i in todo:
            done[i] = run_joint_unit(plan, jp, i, units[i], advance)
            if store is not None:
                store.save_part(jp.part, done[i])
    if dist.enabled:
        parts = gather_objects(done, dist)
        if not dist.is_main:
            return None
        done = {i: u for part in parts for i, u in part.items()}
        for i, unit in done.items():
            if store is not None and not store.part_path(jp.part, i).is_file():
                store.save_part(jp.part, unit)
    missing = [i for i in range(len(units)) if i not in done]
    if missing:
        raise RuntimeError(f"joint units missing after the evaluation: {missing[:5]}")
    return [done[i] for i in range(len(units))]


@dataclass
class JointOutcome:
    """The joint attack over every patient (patients in sorted-id order, slices in test-set order)."""

    spec: AttackSpec
    pred: torch.Tensor  # each patient's decision on its adversarial slices (clean where not attacked)
    clean_pred: torch.Tensor
    attacked: torch.Tensor
    slices_changed: torch.Tensor
    prob: torch.Tensor  # [N, C] each slice's probabilities under the joint attack
    seconds: float
    passes: dict[str, int]
    book: dict[str, int]  # BOOK_KEYS and HARMFUL_KEYS, counted in patients


def assemble_joint(jp: JointPlan, units: list[UnitResult], n_images: int) -> JointOutcome:
    def joined(name: str) -> torch.Tensor:
        return torch.cat([u.tensors[name] for u in units]) if units else torch.zeros(0)

    index, unit_probs = joined("index").long(), joined("prob")
    prob = torch.zeros(n_images, unit_probs.shape[1] if unit_probs.dim() == 2 else 0)
    prob[index] = unit_probs
    return JointOutcome(
        jp.spec,
        joined("pred").long(),
        joined("clean_pred").long(),
        joined("attacked").bool(),
        joined("slices_changed").long(),
        prob,
        sum(float(u.meta["seconds"]) for u in units),
        {k: sum(int(u.meta["passes"][k]) for u in units) for k in ("gradient_evaluations", "forward_passes")},
        {k: sum(int(u.meta[k]) for u in units) for k in BOOK_KEYS + HARMFUL_KEYS},
    )


def patient_groups(ev: LoadedEvaluation) -> tuple[list[str], str]:
    """(one group id per test image, where they came from): the manifest's groups, else one per image."""
    groups = ev.test.dataset.groups
    if groups is None:
        return list(ev.test.dataset.paths), "none (one group per image)"
    return list(groups), "manifest"


def run_joint(
    plan: UnitPlan,
    ev: LoadedEvaluation,
    spec: AttackSpec | None,
    store: UnitStore | None,
    dist: DistInfo,
    progress: bool,
) -> JointOutcome | None:
    """The joint attack (`joint_spec`) over the test set's patients (None when it is off, and on ranks
    other than 0)."""
    if spec is None:
        return None
    patients = Patients.from_groups(patient_groups(ev)[0])
    labels, _ = patient_labels(ev.y, patients, ev.classes)
    rule, severity = str(spec.params["rule"]), severity_order(ev.classes)
    jp = JointPlan(spec, patients, labels, rule, severity, harmful_pair(ev.classes))
    units = run_joint_units(plan, jp, store, dist, progress)
    return None if units is None else assemble_joint(jp, units, len(plan.y))
