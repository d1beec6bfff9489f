"""Example judge for `kind: command`: reads the answer from the file given as the last argument.

Exit 0 = accepted; anything printed becomes the feedback the model reads.
"""
import sys

word = open(sys.argv[-1], encoding="utf-8").read().strip()
problems = []
if len(word) != 7:
    problems.append(f"it has {len(word)} characters, not 7")
if set(word) - {"a", "b"}:
    problems.append("it uses letters other than a and b: " + "".join(sorted(set(word) - {"a", "b"})))
if word != word[::-1]:
    problems.append(f"it is not a palindrome ({word!r} reversed is {word[::-1]!r})")
if word.count("b") < 3:
    problems.append(f"it has only {word.count('b')} b's")
if problems:
    print(f"Your word {word!r} is not valid: " + "; ".join(problems) + ".")
    sys.exit(1)
