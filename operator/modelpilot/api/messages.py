"""Every message the rollout core writes into events and conditions, as a template beside its reason.

In the manner of Argo Rollouts' `utils/conditions`: one place to read what a user will see for each
reason, written once. Placeholders are `str.format` fields; the rollout core fills them
(`ROLLED_BACK.format(revision=..., message=...)`). A test checks that every template is used.
"""

from __future__ import annotations

# Reason.REVISION_CREATED
REVISION_CREATED = "created revision {revision}"
ROLLING_OUT = "rolling out revision {revision} (stable {stable})"
# Reason.ROLLOUT_STEP
RETRYING = "retrying revision {revision} as requested"
STEP_WEIGHT = "step {step}: weight {weight}% to {candidate}"
STEP_RUNNING = "step {step}/{steps}: {kind}"
# Reason.MANUAL_PROMOTE
STEPS_SKIPPED = "revision {revision}: remaining steps skipped by request"
STEP_SKIPPED = "step {step} ({kind}) skipped by request"
# Reason.PROMOTED, Reason.ROLLED_BACK
PROMOTED = "revision {new} promoted to stable (was {old})"
ROLLED_BACK = "rolled back revision {revision}: {message}"
ROLLED_BACK_HOLD = "revision {revision} rolled back ({reason}): {message}"
# Reason.KILL_SWITCH
KILL_SWITCH = "kill switch on: 100% of traffic to stable"
# Reason.OPTIMIZATION_FAILED, Reason.OPTIMIZING
OPTIMIZATION_FAILED_EVENT = (
    "optimisation Job {job} failed (accuracy gate or conversion); revision {revision} is not deployed"
)
OPTIMIZATION_FAILED = "optimisation Job {job} failed: revision {revision} is not deployed"
OPTIMIZING = "optimising the model for revision {revision}: Job {job}"
# Reason.WAITING_FOR_PODS, Reason.AVAILABLE
WAITING_FOR_CANDIDATE = "waiting for candidate {candidate} pods ({ready} ready)"
SCALING_BEFORE_PROMOTION = "scaling candidate {candidate} to full size before promotion"
WAITING_FOR_STABLE = "waiting for revision {revision} pods ({ready} ready)"
SERVING = "revision {revision} serving ({ready} ready)"
NOT_AVAILABLE_IN_TIME = "candidate {candidate} not available within {deadline}s{detail}"
# Reason.ROLLOUT_PAUSED
PAUSED = "rollout paused at step {step}: {why}"
PAUSED_UNTIL_PROMOTED = "paused at step {step} until promoted"
# Reason.ANALYSIS_PASSED, Reason.ANALYSIS_FAILED, Reason.INCONCLUSIVE
ANALYSIS_PASSED = "step {step} ({kind}) passed its analysis: {rules}"
ANALYSIS_FAILED = "analysis failed: {checks}"
INCONCLUSIVE = "analysis inconclusive, extending: {checks}"
INCONCLUSIVE_PAUSED = "rollout paused: {message}"
# Reason.METRICS_UNAVAILABLE
METRICS_WAIT = "metrics unavailable, rollout waits: {checks}"
METRICS_WAIT_BETWEEN_CHECKS = "metrics unavailable, rollout waits for the next check{cause}"
METRICS_OUTAGE = (
    "metrics unavailable for {seconds:.0f}s (outageTimeout {timeout:g}s): the candidate's traffic share is 0 "
    "until they return"
)
METRICS_OUTAGE_HOLD = (
    "metrics unavailable for longer than the outage timeout: the candidate has no traffic until they return "
    "({message})"
)
METRICS_BACK = "metrics are back: step {step} resumes at weight {weight}%"
# Reason.GATE_PASSED, Reason.GATE_FAILED, Reason.GATE_INCONCLUSIVE
GATE_REPLAYING = "gate: replaying labeled production traffic against both revisions"
GATE_SUMMARY = (
    "gate {decision}: n={n}, {metric} candidate {candidate} vs stable {stable}, p={p}, margin {margin:g}, "
    "alpha {alpha:g}: {reason}"
)
GATE_WAITING = "gate inconclusive, waiting: {why}"
