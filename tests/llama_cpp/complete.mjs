// Greedy completions from a GGUF file with llama.cpp (node-llama-cpp's prebuilt binaries, no GPU, no build):
// node complete.mjs MODEL.gguf PROMPT... prints one JSON object: the architecture llama.cpp read, the context it was
// trained with, and each prompt's completion (special tokens in the prompt parsed as such; stop at end of generation).
import {getLlama} from "node-llama-cpp";

const [, , modelPath, ...prompts] = process.argv;
const llama = await getLlama({gpu: false, build: "never"});
const model = await llama.loadModel({modelPath});
const completions = [];
for (const prompt of prompts) {
    const context = await model.createContext({contextSize: model.trainContextSize});
    const tokens = [];
    for await (const token of context.getSequence().evaluate(model.tokenize(prompt, true), {temperature: 0})) {
        if (model.isEogToken(token) || tokens.length >= 64) break;
        tokens.push(token);
    }
    completions.push(model.detokenize(tokens));
    await context.dispose();
}
const metadata = model.fileInfo.metadata;
console.log(JSON.stringify({architecture: metadata.general.architecture, context: model.trainContextSize, completions}));
process.exit(0);
