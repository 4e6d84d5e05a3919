// Principal lives in core/ (transport- and domain-neutral); identity code keeps importing it from here.
export { OPERATOR_ROLES, actorOf, principalLabel, type OperatorRole, type Principal, type SignerScope } from '../core/principal.js';
