/** The part of node-gyp-build (it ships no types) that native.ts uses. */
declare module 'node-gyp-build' {
  /** Loads the addon of the package in `dir`. */
  function load(dir: string): unknown;
  namespace load {
    /** The addon file of the package in `dir` that fits this process:
     * build/Release, build/Debug, then prebuilds/<platform>-<arch>/;
     * throws if none does. */
    function path(dir: string): string;
  }
  export = load;
}
