// Input validation is transport-neutral (domain services validate too); routes import it from here or from core/.
export * from '../core/validation.js';
