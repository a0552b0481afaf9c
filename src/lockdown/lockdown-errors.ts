/**
 * The error strings lockdownd puts in a reply's `Error` key. This is the complete map libimobiledevice
 * knows (`lockdownd_error_str_map`, lockdown-afc.md §2.3); a device sends exactly these spellings and
 * clients compare them byte for byte, so both our simulated lockdownd and our host client use this
 * one list.
 */
export const LOCKDOWN_ERRORS = [
  'InvalidResponse',
  'MissingKey',
  'MissingValue',
  'GetProhibited',
  'SetProhibited',
  'RemoveProhibited',
  'ImmutableValue',
  'PasswordProtected',
  'UserDeniedPairing',
  'PairingDialogResponsePending',
  'MissingHostID',
  'InvalidHostID',
  'SessionActive',
  'SessionInactive',
  'MissingSessionID',
  'InvalidSessionID',
  'MissingService',
  'InvalidService',
  'ServiceLimit',
  'MissingPairRecord',
  'SavePairRecordFailed',
  'InvalidPairRecord',
  'InvalidActivationRecord',
  'MissingActivationRecord',
  'ServiceProhibited',
  'EscrowLocked',
  'PairingProhibitedOverThisConnection',
  'FMiPProtected',
  'MCProtected',
  'MCChallengeRequired',
  // Not in libimobiledevice's map; pymobiledevice3 knows it (lockdown-afc.md §2.3).
  'InvalidConnection',
] as const;

/** One of the error strings above. */
export type LockdownErrorString = (typeof LOCKDOWN_ERRORS)[number];

/**
 * The string our simulated lockdownd answers to a verb it does not implement or a message without
 * a `Request`. No client source names this case; the spelling follows lockdownd's own style
 * (`Invalid…`) and every client treats an unknown string as a generic failure. **[inf]**
 */
export const INVALID_REQUEST = 'InvalidRequest';

/** The error code every lockdown failure on the host side carries (MuxwireError.code). */
export const ERR_LOCKDOWN = 'MUXWIRE_ERR_LOCKDOWN';
