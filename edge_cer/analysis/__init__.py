"""Study analysis: the trial table's contract, `edge-cer analyze`, its HTML report, and `edge-cer simulate`."""
