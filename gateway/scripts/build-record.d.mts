// Types of build-record.mjs (plain JavaScript, since it runs before anything is compiled), for the tests.
export declare const TSCONFIG: string
export declare const RECORD_NAME: string
export declare function readTsconfig(root?: string): { include?: unknown; compilerOptions?: { outDir?: string } }
export declare function sources(tsconfig: { include?: unknown }, root?: string): string[] | undefined
export declare function staleness(outDir: string, inputs: string[] | undefined, root?: string): string | undefined
