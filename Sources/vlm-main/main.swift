// The vlm binary: the command line (VLMCLI) and nothing else.

import VLMCLI

await VLM.runCommandLine()
