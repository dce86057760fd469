from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ActRequest(_message.Message):
    __slots__ = ("policy", "version", "observation", "action_mask", "deterministic", "episode_id", "explain")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_FIELD_NUMBER: _ClassVar[int]
    ACTION_MASK_FIELD_NUMBER: _ClassVar[int]
    DETERMINISTIC_FIELD_NUMBER: _ClassVar[int]
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    policy: str
    version: int
    observation: _containers.RepeatedScalarFieldContainer[float]
    action_mask: _containers.RepeatedScalarFieldContainer[bool]
    deterministic: bool
    episode_id: str
    explain: bool
    def __init__(self, policy: _Optional[str] = ..., version: _Optional[int] = ..., observation: _Optional[_Iterable[float]] = ..., action_mask: _Optional[_Iterable[bool]] = ..., deterministic: _Optional[bool] = ..., episode_id: _Optional[str] = ..., explain: _Optional[bool] = ...) -> None: ...

class ContinuousAction(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class ActResponse(_message.Message):
    __slots__ = ("discrete_action", "continuous_action", "policy_version", "probabilities", "propensity", "values", "fallback", "clamped", "explanation", "error", "event_id")
    DISCRETE_ACTION_FIELD_NUMBER: _ClassVar[int]
    CONTINUOUS_ACTION_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    CLAMPED_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    discrete_action: int
    continuous_action: ContinuousAction
    policy_version: int
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    propensity: float
    values: _containers.RepeatedScalarFieldContainer[float]
    fallback: bool
    clamped: bool
    explanation: Explanation
    error: ActError
    event_id: str
    def __init__(self, discrete_action: _Optional[int] = ..., continuous_action: _Optional[_Union[ContinuousAction, _Mapping]] = ..., policy_version: _Optional[int] = ..., probabilities: _Optional[_Iterable[float]] = ..., propensity: _Optional[float] = ..., values: _Optional[_Iterable[float]] = ..., fallback: _Optional[bool] = ..., clamped: _Optional[bool] = ..., explanation: _Optional[_Union[Explanation, _Mapping]] = ..., error: _Optional[_Union[ActError, _Mapping]] = ..., event_id: _Optional[str] = ...) -> None: ...

class ActError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ActBatchRequest(_message.Message):
    __slots__ = ("policy", "version", "observations", "action_masks", "deterministic")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    ACTION_MASKS_FIELD_NUMBER: _ClassVar[int]
    DETERMINISTIC_FIELD_NUMBER: _ClassVar[int]
    policy: str
    version: int
    observations: _containers.RepeatedScalarFieldContainer[float]
    action_masks: _containers.RepeatedScalarFieldContainer[bool]
    deterministic: bool
    def __init__(self, policy: _Optional[str] = ..., version: _Optional[int] = ..., observations: _Optional[_Iterable[float]] = ..., action_masks: _Optional[_Iterable[bool]] = ..., deterministic: _Optional[bool] = ...) -> None: ...

class ActBatchResponse(_message.Message):
    __slots__ = ("discrete_actions", "continuous_actions", "propensities", "policy_version")
    DISCRETE_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    CONTINUOUS_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    PROPENSITIES_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    discrete_actions: _containers.RepeatedScalarFieldContainer[int]
    continuous_actions: _containers.RepeatedScalarFieldContainer[float]
    propensities: _containers.RepeatedScalarFieldContainer[float]
    policy_version: int
    def __init__(self, discrete_actions: _Optional[_Iterable[int]] = ..., continuous_actions: _Optional[_Iterable[float]] = ..., propensities: _Optional[_Iterable[float]] = ..., policy_version: _Optional[int] = ...) -> None: ...

class Explanation(_message.Message):
    __slots__ = ("actions", "rules_fired", "value_kind", "unclamped_action")
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    RULES_FIRED_FIELD_NUMBER: _ClassVar[int]
    VALUE_KIND_FIELD_NUMBER: _ClassVar[int]
    UNCLAMPED_ACTION_FIELD_NUMBER: _ClassVar[int]
    actions: _containers.RepeatedCompositeFieldContainer[ActionExplanation]
    rules_fired: _containers.RepeatedCompositeFieldContainer[RuleFired]
    value_kind: str
    unclamped_action: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, actions: _Optional[_Iterable[_Union[ActionExplanation, _Mapping]]] = ..., rules_fired: _Optional[_Iterable[_Union[RuleFired, _Mapping]]] = ..., value_kind: _Optional[str] = ..., unclamped_action: _Optional[_Iterable[float]] = ...) -> None: ...

class ActionExplanation(_message.Message):
    __slots__ = ("action", "allowed", "value_before_mask", "value_after_mask", "probability_before_mask", "probability_after_mask", "forbidden_by")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    VALUE_BEFORE_MASK_FIELD_NUMBER: _ClassVar[int]
    VALUE_AFTER_MASK_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_BEFORE_MASK_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_AFTER_MASK_FIELD_NUMBER: _ClassVar[int]
    FORBIDDEN_BY_FIELD_NUMBER: _ClassVar[int]
    action: int
    allowed: bool
    value_before_mask: float
    value_after_mask: float
    probability_before_mask: float
    probability_after_mask: float
    forbidden_by: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, action: _Optional[int] = ..., allowed: _Optional[bool] = ..., value_before_mask: _Optional[float] = ..., value_after_mask: _Optional[float] = ..., probability_before_mask: _Optional[float] = ..., probability_after_mask: _Optional[float] = ..., forbidden_by: _Optional[_Iterable[str]] = ...) -> None: ...

class RuleFired(_message.Message):
    __slots__ = ("rule", "forbidden_actions", "low", "high")
    RULE_FIELD_NUMBER: _ClassVar[int]
    FORBIDDEN_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    rule: str
    forbidden_actions: _containers.RepeatedScalarFieldContainer[int]
    low: _containers.RepeatedScalarFieldContainer[float]
    high: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, rule: _Optional[str] = ..., forbidden_actions: _Optional[_Iterable[int]] = ..., low: _Optional[_Iterable[float]] = ..., high: _Optional[_Iterable[float]] = ...) -> None: ...

class ListPoliciesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPoliciesResponse(_message.Message):
    __slots__ = ("policies",)
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[PolicyInfo]
    def __init__(self, policies: _Optional[_Iterable[_Union[PolicyInfo, _Mapping]]] = ...) -> None: ...

class GetPolicyRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class DiscreteSpace(_message.Message):
    __slots__ = ("n",)
    N_FIELD_NUMBER: _ClassVar[int]
    n: int
    def __init__(self, n: _Optional[int] = ...) -> None: ...

class BoxSpace(_message.Message):
    __slots__ = ("shape", "low", "high")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    low: _containers.RepeatedScalarFieldContainer[float]
    high: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., low: _Optional[_Iterable[float]] = ..., high: _Optional[_Iterable[float]] = ...) -> None: ...

class Space(_message.Message):
    __slots__ = ("discrete", "box")
    DISCRETE_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    discrete: DiscreteSpace
    box: BoxSpace
    def __init__(self, discrete: _Optional[_Union[DiscreteSpace, _Mapping]] = ..., box: _Optional[_Union[BoxSpace, _Mapping]] = ...) -> None: ...

class PolicyInfo(_message.Message):
    __slots__ = ("name", "versions", "default_version", "algorithm", "observation_shape", "action_space", "env_id", "runtime", "observation_space")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_SHAPE_FIELD_NUMBER: _ClassVar[int]
    ACTION_SPACE_FIELD_NUMBER: _ClassVar[int]
    ENV_ID_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_SPACE_FIELD_NUMBER: _ClassVar[int]
    name: str
    versions: _containers.RepeatedScalarFieldContainer[int]
    default_version: int
    algorithm: str
    observation_shape: _containers.RepeatedScalarFieldContainer[int]
    action_space: Space
    env_id: str
    runtime: str
    observation_space: Space
    def __init__(self, name: _Optional[str] = ..., versions: _Optional[_Iterable[int]] = ..., default_version: _Optional[int] = ..., algorithm: _Optional[str] = ..., observation_shape: _Optional[_Iterable[int]] = ..., action_space: _Optional[_Union[Space, _Mapping]] = ..., env_id: _Optional[str] = ..., runtime: _Optional[str] = ..., observation_space: _Optional[_Union[Space, _Mapping]] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("policy", "episode_id", "reward", "terminated", "truncated", "next_observation", "event_id", "feedback_id", "next_action_mask")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    TERMINATED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    NEXT_OBSERVATION_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_ID_FIELD_NUMBER: _ClassVar[int]
    NEXT_ACTION_MASK_FIELD_NUMBER: _ClassVar[int]
    policy: str
    episode_id: str
    reward: float
    terminated: bool
    truncated: bool
    next_observation: _containers.RepeatedScalarFieldContainer[float]
    event_id: str
    feedback_id: str
    next_action_mask: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, policy: _Optional[str] = ..., episode_id: _Optional[str] = ..., reward: _Optional[float] = ..., terminated: _Optional[bool] = ..., truncated: _Optional[bool] = ..., next_observation: _Optional[_Iterable[float]] = ..., event_id: _Optional[str] = ..., feedback_id: _Optional[str] = ..., next_action_mask: _Optional[_Iterable[bool]] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("applied", "sequence", "policy_version", "error")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    sequence: int
    policy_version: int
    error: ActError
    def __init__(self, applied: _Optional[bool] = ..., sequence: _Optional[int] = ..., policy_version: _Optional[int] = ..., error: _Optional[_Union[ActError, _Mapping]] = ...) -> None: ...

class Transition(_message.Message):
    __slots__ = ("policy", "observation", "discrete_action", "continuous_action", "reward", "next_observation", "terminated", "truncated", "action_mask", "next_action_mask", "transition_id", "propensity")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_FIELD_NUMBER: _ClassVar[int]
    DISCRETE_ACTION_FIELD_NUMBER: _ClassVar[int]
    CONTINUOUS_ACTION_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    NEXT_OBSERVATION_FIELD_NUMBER: _ClassVar[int]
    TERMINATED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    ACTION_MASK_FIELD_NUMBER: _ClassVar[int]
    NEXT_ACTION_MASK_FIELD_NUMBER: _ClassVar[int]
    TRANSITION_ID_FIELD_NUMBER: _ClassVar[int]
    PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    policy: str
    observation: _containers.RepeatedScalarFieldContainer[float]
    discrete_action: int
    continuous_action: _containers.RepeatedScalarFieldContainer[float]
    reward: float
    next_observation: _containers.RepeatedScalarFieldContainer[float]
    terminated: bool
    truncated: bool
    action_mask: _containers.RepeatedScalarFieldContainer[bool]
    next_action_mask: _containers.RepeatedScalarFieldContainer[bool]
    transition_id: str
    propensity: float
    def __init__(self, policy: _Optional[str] = ..., observation: _Optional[_Iterable[float]] = ..., discrete_action: _Optional[int] = ..., continuous_action: _Optional[_Iterable[float]] = ..., reward: _Optional[float] = ..., next_observation: _Optional[_Iterable[float]] = ..., terminated: _Optional[bool] = ..., truncated: _Optional[bool] = ..., action_mask: _Optional[_Iterable[bool]] = ..., next_action_mask: _Optional[_Iterable[bool]] = ..., transition_id: _Optional[str] = ..., propensity: _Optional[float] = ...) -> None: ...

class UpdateSummary(_message.Message):
    __slots__ = ("applied", "duplicates", "policy_version")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    applied: int
    duplicates: int
    policy_version: int
    def __init__(self, applied: _Optional[int] = ..., duplicates: _Optional[int] = ..., policy_version: _Optional[int] = ...) -> None: ...
